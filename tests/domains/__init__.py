"""Per domain of the registry: its part of the workload (hypothesis ops and
how to run them) and an exercise of every command and query. The workload
generator and the query-plan test find them by the registry's names, so a
registered domain without its module here fails them."""
