"""Tools for the lab tests of rolling upgrades: release variants and the load generator."""
