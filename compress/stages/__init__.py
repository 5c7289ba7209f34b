"""Pipeline stages: each a typed config (compress.config) and one `run(ctx)`; compress.pipeline
orders them."""
