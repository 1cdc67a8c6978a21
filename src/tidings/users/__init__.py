"""Console users: accounts, workspace roles, sessions and sign-in throttling."""
