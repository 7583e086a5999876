//! Smallest command list that turns one IPVS table into another (pure).
