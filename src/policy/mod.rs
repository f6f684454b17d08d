//! Policies: the data inventory, roles, masks and user grants.

pub mod model;
