"""Ingest's tables, in schema `ingest`."""

from sqlalchemy import MetaData

from shared.auth import api_keys_table

metadata = MetaData(schema="ingest")
api_keys = api_keys_table(metadata)
