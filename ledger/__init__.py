"""The ledger's shared package: config, domain types, chain parsing, database and cache helpers."""
