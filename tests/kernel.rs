//! Real-kernel tests: rsbal drives the IPVS of a Debian kernel booted under
//! qemu (TCG), through netlink and through Debian's `ipvsadm`. The guest
//! runs a scenario script from `tests/kernel/guest/` and reports each check
//! on the serial console; see `tests/kernel/harness.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

#[path = "kernel/harness.rs"]
mod harness;

use std::time::Duration;

/// Generous: a TCG boot takes seconds, the scenarios a minute or two.
const LIMIT: Duration = Duration::from_secs(400);

#[test]
fn both_backends_drive_the_kernel_the_same_way() {
    let run = harness::boot("backends.sh", LIMIT);
    let mut names = Vec::new();
    for b in ["netlink", "ipvsadm"] {
        for check in [
            "start",
            "ipv6-start",
            "backend-used",
            "killed",
            "recovered",
            "ipv6-killed",
            "ipv6-recovered",
            "weight",
            "sighup-removed",
            "forwarding-changed",
            "stop-leaves-table",
            "no-ipvs-errors",
        ] {
            names.push(format!("{b}/{check}"));
        }
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    run.assert_ok(&names);
    assert!(run.finished, "guest did not finish:\n{}", run.console);
    let netlink = &run.tables["netlink"];
    assert!(!netlink.is_empty());
    assert_eq!(
        netlink, &run.tables["ipvsadm"],
        "the two backends left different tables"
    );
}

#[test]
fn reconciliation_repairs_drift_and_a_restart_changes_nothing() {
    let run = harness::boot("reconcile.sh", LIMIT);
    run.assert_ok(&[
        "reconcile/start",
        "reconcile/deleted-restored",
        "reconcile/repair-logged",
        "reconcile/unknown-removed",
        "reconcile/weight-fixed",
        "reconcile/foreign-untouched",
        "restart/netlink-no-gap",
        "restart/ipvsadm-no-gap",
        "restart/no-change",
        "reconcile-ipvsadm/deleted-restored",
    ]);
    assert!(run.finished, "guest did not finish:\n{}", run.console);
}
