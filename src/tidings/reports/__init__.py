"""Live reports: counts per campaign, version and execution, kept as events happen."""
