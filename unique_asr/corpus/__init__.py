"""Corpus transcription: many files over many processes, restartable, with a result manifest.

Launch modes (unique_asr/corpus/cli.py): one process (`unique-corpus ...`), one rank per GPU of a host
(`torchrun --nproc_per_node N -m unique_asr.corpus ...`, torchrun.py), or a Ray cluster (`--launcher ray`,
ray_launcher.py). Modules: plan.py (items, durations, longest-first shards), state.py (claims and commits in
<output_dir>/.corpus), work.py (one file: claim -> journaled transcription -> transcripts -> commit),
progress.py (the one progress line), job.py (plan / run locally / merged result manifest).
"""
