"""`lwd dashboard`: a live web page about a deploy run (robots, versions and gate
decisions, success and interventions per task, the validation curve, throughput and
latencies), read from the run directory's files while `lwd deploy` writes them.

An evaluation-and-reports-level layer: it only reads files, never imports the online loop
and starts no process but its own web server. `state.py` turns file contents into the
page's JSON (pure functions), `files.py` reads a run directory, `server.py` serves both.
"""
