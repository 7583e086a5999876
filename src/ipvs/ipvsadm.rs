//! `ipvsadm -R` syntax for commands and parsing of `ipvsadm -Sn` output (pure).

use super::{IpvsCommand, Table};

pub fn restore_line(cmd: &IpvsCommand) -> String {
    let _ = cmd;
    todo!("helper")
}

pub fn parse_save(text: &str) -> Result<Table, String> {
    let _ = text;
    todo!("helper")
}
