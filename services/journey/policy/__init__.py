"""The workspace's contact policy: storage, the HTTP directory of templates and segments,
and the `/v1/policy` routes (the rules themselves are pure: domain/policy.py)."""
