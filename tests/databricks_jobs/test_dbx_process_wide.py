import threading
import time

from databricks_jobs.process_wide import ProcessWide


def test_threads_racing_to_first_use_share_one_value():
    built, closed = [], []

    def build():
        time.sleep(0.01)  # widen the race window
        built.append(object())
        return built[-1]

    shared = ProcessWide(build, close=closed.append)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(shared.get())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and all(v is built[0] for v in seen)

    shared.reset()
    assert closed == built
    assert shared.get() is built[1]  # rebuilt after a reset
    shared.override("stub")
    assert shared.get() == "stub" and closed == built
