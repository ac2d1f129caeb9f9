"""The SQL of eventkernel: journal migrations (journal/NNNN_*.sql) and each
projection's tables (projections/NAME.sql). Data only; no code."""
