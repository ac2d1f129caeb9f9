"""Commands, one module per domain: read state, check rules, append, apply
projections — all in one write transaction."""
