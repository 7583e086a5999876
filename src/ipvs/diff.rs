//! Smallest command list that turns one IPVS table into another (pure).

use super::{IpvsCommand, ServiceTable, Table};

pub fn diff_service(
    current: Option<&ServiceTable>,
    desired: Option<&ServiceTable>,
) -> Vec<IpvsCommand> {
    let _ = (current, desired);
    todo!("helper")
}

pub fn apply(table: &mut Table, cmd: &IpvsCommand) {
    let _ = (table, cmd);
    todo!("helper")
}
