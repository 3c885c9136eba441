"""What writing one resume state costs, per model size: with ``save_seconds: 60`` a job writes one a
minute, so its cost is this time over 60 s (and never more than 2%: kdlib.distill.train.save_due).

    .venv/bin/python bench/bench_resume_state.py

Each model gets one AdamW step (so the optimizer holds its moments), then its state is written five
times into a temporary folder the way training writes it (kdlib.distill.resume.save_state:
weights, moments and metadata, each file atomically); the median is printed.
"""
import statistics
import tempfile
import time
from pathlib import Path

from kdlib import backend
from kdlib.distill import resume, train
from kdlib.models.bert import BertConfig, build_bert
from kdlib.models.lstm import LstmConfig, build_bilstm

META = {"best": 0.0, "best_step": 0, "seconds": 0, "history": [], "skipped_steps": 0, "identity": {},
        "stopped_early": False, "eval_seconds": 0}


def main() -> int:
    B = backend.load("torch", "cpu", "bf16")
    B.set_num_threads(1)
    models = {
        "BERT 4L/312": build_bert(B, BertConfig(vocab_size=30522, num_hidden_layers=4, hidden_size=312,
                                                num_attention_heads=12, intermediate_size=1200, num_labels=2)),
        "BERT 6L/384": build_bert(B, BertConfig(vocab_size=30522, num_hidden_layers=6, hidden_size=384,
                                                num_attention_heads=12, intermediate_size=1536, num_labels=2)),
        "BiLSTM 150": build_bilstm(B, LstmConfig(vocab_size=10002, hidden_size=150, fc_size=200)),
    }
    print("| model | parameters (M) | one resume state (s) | share of a minute |")
    print("| --- | ---: | ---: | ---: |")
    for name, model in models.items():
        optimizer = train.make_optimizer(B, {"m": model}, train.TrainConfig.from_dict({"lr": 1e-4}))
        sum(p.sum() for p in model.parameters()).backward()
        optimizer.step()
        times = []
        with tempfile.TemporaryDirectory() as folder:
            for step in range(5):
                start = time.perf_counter()
                resume.save_state(B, Path(folder), {"m": model}, optimizer, {"step": step, **META})
                times.append(time.perf_counter() - start)
        cost = statistics.median(times)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"| {name} | {params:.1f} | {cost:.2f} | {100 * cost / 60:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
