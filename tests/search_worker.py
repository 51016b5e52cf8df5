"""One search worker process for tests/test_search.py: joins a study and evaluates candidates.

usage: search_worker.py STORAGE_URL TABLE_JSON MODEL_KERAS TRIALS [SECONDS_PER_CANDIDATE]
"""

import sys
import time

import keras
import numpy as np

import tfpconv.search as search
from tfpconv.runtime.latency_table import LatencyTable
from tfpconv.search.study import open_storage


class SlowEstimator(search.AccuracyEstimator):
    """The real estimator, plus a pause so that the test can kill a worker mid-candidate."""

    pause = 0.0

    def evaluate(self, candidate):
        time.sleep(self.pause)
        return super().evaluate(candidate)


def main():
    url, table_path, model_path, trials = sys.argv[1:5]
    model = keras.models.load_model(model_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 12, 12, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int64")
    estimator = SlowEstimator(model, x, y, finetune_steps=2, batch_size=32, calibration_batches=2)
    estimator.pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    search.search(
        model, x, y, LatencyTable.load(table_path, force=True), int(trials),
        storage=open_storage(url, heartbeat_interval=1, grace_period=3),
        study_name="shared", population_size=4, worker=True, estimator=estimator,
        # sampled candidates only: a retried trial then runs before the study ends (it would
        # queue behind the uniform starting points otherwise)
        start_from_baselines=False,
    )  # fmt: skip
    print("worker done", flush=True)


if __name__ == "__main__":
    main()
