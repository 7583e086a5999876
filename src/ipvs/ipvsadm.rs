//! `ipvsadm -R` syntax for commands and parsing of `ipvsadm -Sn` output (pure).
