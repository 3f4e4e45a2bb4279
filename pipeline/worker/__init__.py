"""The worker wiring: the broker and its middleware, the stage actors, and the StageContext they run with.

The only importer of the stage modules; ``services/worker.py`` runs it as a process.
"""
