//! Parser for the Python literals PyBal used to eval().
// (to be written: see helper task)
