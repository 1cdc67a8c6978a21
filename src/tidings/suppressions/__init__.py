"""The suppression list: addresses and domains no message of a workspace goes to."""
