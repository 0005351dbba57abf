"""Test support that talks to real things: a Tansu broker, Postgres, HTTP and SMTP servers."""
