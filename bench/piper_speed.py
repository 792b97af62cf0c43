"""onnxruntime's real-time factor on a Piper voice: the reference sentences' phoneme ids
(fixtures/reference/piper-joe/sentences.json), zero noise, one session.

    python piper_speed.py --threads N --model VOICE.onnx --sentences sentences.json
prints {"rtf": synthesis seconds / audio seconds, "audio_s": ..., "synthesis_s": ...}
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, required=True)
p.add_argument("--model", required=True)
p.add_argument("--sentences", required=True)
a = p.parse_args()
options = ort.SessionOptions()
options.intra_op_num_threads = a.threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])
cases = json.load(open(a.sentences))["cases"]
synthesis = 0.0
samples = 0
for case in cases:
    for s in case["sentences"]:
        ids = s["ids"]
        start = time.perf_counter()
        audio = session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
            },
        )[0]
        synthesis += time.perf_counter() - start
        samples += audio.size
audio_s = samples / 22050
print(json.dumps({"rtf": synthesis / audio_s, "audio_s": audio_s, "synthesis_s": synthesis}))
