import statistics

from bench.queue import trigger_to_run_start

w = trigger_to_run_start(8)
print(w, statistics.median(w), max(w))
