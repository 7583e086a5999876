//! INI reader in the Python ConfigParser flavour, keeping line numbers.
// (to be written: see helper task)
