"""The exit codes of every command, in one place (the CLI returns them; CI reads them).

| code | meaning |
|---|---|
| 0 | done; for `gate`, every candidate is non-inferior |
| 1 | `gate`: a quality regression (non-inferiority not shown, the candidate shown worse) |
| 2 | a usage or config error, found before any paid call (the message names file, field and fix) |
| 3 | could not decide: the budget ran out, too many errors, or the eval is too small |
| 4 | could not complete: every call failed, nothing ran, tracking failed, or an internal error; the
|   | records that were made stay in the response cache and the report is written locally |
| 130 | interrupted (Ctrl-C); run the same command again to resume from the cache |
| 143 | terminated (SIGTERM, as `timeout`, CI runners and Kubernetes send); the same as 130 otherwise |

A regression outranks everything but a usage error: a `gate` that found one exits 1 even when tracking
it failed afterwards.
"""

EXIT_OK = 0
EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_UNDECIDED = 3
EXIT_BUDGET = 3
EXIT_INCOMPLETE = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
