"""HTTP pieces every service app shares: problem+json errors, health, limits, auth."""
