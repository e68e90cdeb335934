"""Values the paper reports (An, Wang, Dong), as data, so every table prints them beside this run's.

Transcribed from the paper's Tables 1-11 and Sec. 5; percentages unless stated.
"""
from __future__ import annotations

# Table 1: zero-shot, Image-AUC / Pixel-AUC; "A -> B" = trained on A, tested on B.
# (VisA->MVTec image, pixel, MVTec->VisA image, pixel)
TABLE1 = {
    "SPADE": (77.9, 80.4, 75.3, 77.8), "PaDiM": (73.8, 75.2, 59.1, 60.4), "PatchCore": (79.5, 82.8, 73.8, 76.7),
    "WinCLIP": (91.8, 85.1, 76.4, 78.1), "PromptAD": (81.8, 83.2, 74.6, 87.5), "AnomalyGPT": (93.2, 94.6, 85.1, 93.8),
    "Myriad": (93.2, 94.6, 85.1, 93.8), "AnomalyCLIP": (91.5, 91.1, 82.1, 95.4), "AA-CLIP": (90.5, 91.9, 84.6, 95.5),
    "AdaCLIP": (90.0, 89.9, 84.3, 95.5), "SPGDD-GPT": (93.6, 94.8, 85.5, 94.2), "ADPretrain": (93.4, 94.7, 86.7, 95.5),
    "SSVP": (93.0, 92.2, 86.7, 95.6), "SAM-LLaVA": (94.8, 95.6, 86.9, 95.7),
}

# Tables 2-4: few-shot Pixel-AUC per TADD subset (subsets with a synthetic stand-in here), K = 1, 2, 4.
TABLES2_4 = {
    # subset: {method: (1-shot, 2-shot, 4-shot)}
    "Aitex": {
        "PatchCore": (63.6, 65.2, 66.8),
        "WinCLIP": (92.8, 92.9, 93.4),
        "SPGDD-GPT": (93.2, 93.6, 94.9),
        "SAM-LLaVA": (95.6, 95.9, 96.5),
    },
    "CFD": {
        "PatchCore": (87.5, 87.5, 88.3),
        "WinCLIP": (90.0, 91.3, 93.0),
        "SPGDD-GPT": (94.8, 96.3, 97.4),
        "SAM-LLaVA": (95.4, 95.8, 96.7),
    },
    "Crack500": {
        "PatchCore": (65.8, 67.0, 68.3),
        "WinCLIP": (74.5, 74.8, 76.2),
        "SPGDD-GPT": (87.1, 89.5, 90.3),
        "SAM-LLaVA": (91.1, 91.7, 92.6),
    },
    "KolektorSDD": {
        "PatchCore": (74.8, 76.3, 76.8),
        "WinCLIP": (89.7, 90.6, 91.6),
        "SPGDD-GPT": (91.0, 92.4, 92.8),
        "SAM-LLaVA": (93.2, 93.8, 95.1),
    },
    "MT": {
        "PatchCore": (83.2, 83.7, 84.9),
        "WinCLIP": (92.8, 93.8, 95.7),
        "SPGDD-GPT": (88.8, 90.8, 92.6),
        "SAM-LLaVA": (93.6, 94.1, 95.4),
    },
    "NEU": {
        "PatchCore": (62.3, 63.0, 64.5),
        "WinCLIP": (91.5, 93.2, 94.5),
        "SPGDD-GPT": (95.6, 96.7, 97.3),
        "SAM-LLaVA": (95.8, 96.8, 97.1),
    },
    "RSDD": {
        "PatchCore": (60.8, 62.4, 63.8),
        "WinCLIP": (84.4, 85.2, 86.5),
        "SPGDD-GPT": (85.8, 87.0, 89.4),
        "SAM-LLaVA": (89.4, 90.6, 91.9),
    },
}
# Figure 2: mean Pixel-AUC over the 21 TADD subsets.
FIGURE2_MEAN = {"SAM-LLaVA": (93.3, 94.0, 95.0), "SPGDD-GPT": (91.3, 92.6, 93.7)}
# Sec. 5.1.2 (text): MVTec-AD Pixel-AUC from 1-shot to 4-shot.
SHOTS_PIXEL_MVTEC = (96.1, 97.5)

# Table 5: description accuracy (mean, std) on MVTec-AD and VisA, K = 1, 2, 4.
TABLE5 = {
    1: {"AnomalyGPT": ((86.1, 1.1), (77.4, 1.0)), "Myriad": ((87.4, 0.9), (80.5, 1.2)),
        "SPGDD-GPT": ((90.1, 1.9), (80.6, 1.7)), "SAM-LLaVA": ((92.3, 1.2), (83.8, 1.0))},
    2: {"AnomalyGPT": ((84.8, 0.8), (77.5, 0.3)), "Myriad": ((85.4, 0.7), (78.9, 0.5)),
        "SPGDD-GPT": ((89.0, 2.3), (79.5, 1.6)), "SAM-LLaVA": ((92.0, 1.6), (82.9, 1.5))},
    4: {"AnomalyGPT": ((85.0, 0.3), (77.7, 0.4)), "Myriad": ((85.3, 0.3), (78.3, 0.3)),
        "SPGDD-GPT": ((88.7, 2.3), (78.9, 1.7)), "SAM-LLaVA": ((90.8, 2.1), (81.1, 1.9))},
}

# Table 6: GPT-4V judge scores (abnormal, normal, all).
TABLE6 = {"PandaGPT": (30.0, 40.0, 35.0), "MiniGPT-4": (21.5, 61.5, 41.5), "AnomalyGPT": (80.5, 86.5, 83.5),
          "SPGDD-GPT": (94.6, 93.4, 94.0), "SAM-LLaVA": (95.5, 96.5, 96.0)}

# Tables 7-10: ablations, (MVTec image, pixel, acc, VisA image, pixel, acc).
ABLATIONS = {
    "SAM-LLaVA (full)": (95.3, 96.1, 92.3, 88.2, 96.5, 83.8),
    "w/o CLIP-SAM cascade": (92.5, 93.1, 89.5, 85.0, 92.0, 79.8),  # Table 7
    "w/o MS-Prompt": (93.7, 93.5, 90.8, 86.2, 95.3, 82.0),  # Table 8
    "w/o MS-Decoder": (94.3, 94.7, 91.2, 86.5, 94.8, 82.3),
    "single-scale SAM": (92.8, 93.0, 89.4, 82.8, 90.9, 78.6),
    "w/o SASA": (94.5, 95.3, 89.6, 87.2, 95.4, 80.1),  # Table 9
    "box prompt": (94.2, 94.8, 91.5, 86.5, 95.0, 82.5),  # Table 10
    "point prompt": (93.5, 94.0, 90.0, 85.8, 94.2, 80.8),
}

# Settings the paper states: K normal shots (Tables 2-5), inference batch size (Sec. 5.3.5).
SHOTS = (1, 2, 4)
INFERENCE_BATCH = 1

# Table 11 and Sec. 5.3.5: complexity (L40 GPU, batch 1, 240 px, 200 runs after 50 warm-ups).
TABLE11 = {
    "AnomalyGPT": {"total_M": 8089.64, "trainable_M": 150.44, "train_hours": 41.2, "latency_ms": 1253.05},
    "Myriad": {"total_M": 8321.62, "trainable_M": 231.50, "train_hours": 50.5, "latency_ms": 1809.70},
    "SPGDD-GPT": {"total_M": 8195.65, "trainable_M": 350.49, "train_hours": 73.8, "latency_ms": 1293.98},
    "SAM-LLaVA": {
        "total_M": 8334.92,
        "trainable_M": 112.38,
        "lora_M": 31.59,
        "train_hours": 35.0,
        "latency_ms": 1563.86,
        "throughput_img_s": 0.64,
        "peak_memory_GB": 21,
        "train_memory_GB_per_gpu": 28,
    },
}


def reported_numbers() -> set[float]:
    """Every number in this module (values, and the integer keys that name shot counts): a cell under a
    "paper" header must be one of them (rounded to 2 decimals)."""
    found: set[float] = set()

    def walk(x) -> None:
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)):
            found.add(round(float(x), 2))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v)

    for name, value in list(globals().items()):
        if name.isupper():
            walk(value)
    return found

# Row labels of the few-shot tables' mean rows (Tables 2-4): ours over the subsets run, the paper's over its 21.
MEAN_ROW = "mean of these subsets (this run)"
PAPER_MEAN_ROW = "mean of the 21 TADD subsets (paper, Fig. 2)"
