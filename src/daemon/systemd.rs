//! Start-up, reload and stop notifications to systemd (`Type=notify`).
//!
//! The daemon calls [`ready`] once every service has been created,
//! [`reloading`] before and [`ready`] after a SIGHUP reload, and [`stopping`]
//! when shutdown begins. Each is a no-op when `NOTIFY_SOCKET` is unset (rsbal
//! not started by systemd, e.g. under the LSB init script or by hand). A
//! failed send is logged as a warning and never stops the daemon.

use sd_notify::NotifyState;

const LOG_TARGET: &str = "rsbal";

/// `READY=1`: start-up or a reload is complete; `status` is shown by
/// `systemctl status`.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with `MONOTONIC_USEC`, which systemd 253 and later
/// require): a SIGHUP reload has started; [`ready`] must follow.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`: shutdown has begun.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!(target: LOG_TARGET, "cannot notify systemd: {e}");
    }
}
