"""The distillation recipe one library call at a time, without the pipeline or the CLI.

    python examples/step_by_step.py                              # the smoke config (seconds)
    python examples/step_by_step.py data.limit=512 teacher.train.epochs=3 --output-dir /tmp/runs
    python examples/step_by_step.py --config my-data/config.yaml

Steps: prepare the data → train the teacher → train the student from scratch (labels only) →
distill the same student from the teacher with logit KD (Hinton's softened-logit loss) →
evaluate everything saved in the run folder and print the summary. Every function used here
is the one the pipeline calls (``mmdistill.recipes``), so the run folder is the same as
``mmdistill run`` writes and ``mmdistill report`` can read it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmdistill.config import load_config
from mmdistill.config.schema import DistillStudentConfig, DistillTermConfig
from mmdistill.recipes.data import prepare_data
from mmdistill.recipes.distill import distill_student, load_teachers
from mmdistill.recipes.evaluate import evaluate_run, format_summary
from mmdistill.recipes.train import spec_for, train_model
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.runtime import set_threads


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted KEY=VALUE overrides, e.g. data.limit=128")
    parser.add_argument("--config", default="smoke", help="YAML file or packaged name (default: smoke)")
    parser.add_argument("--output-dir", default=None, help="parent folder of run folders")
    args = parser.parse_args(argv)
    overrides = [*args.overrides, "name=step-by-step"]
    if args.output_dir is not None:
        overrides.append(f"output_dir='{args.output_dir}'")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # 0. Config and run folder: everything below reads and writes only this folder.
    cfg = load_config(args.config, overrides)
    set_threads(cfg.threads)
    run_dir = Path(cfg.output_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = MetricsLogger(run_dir / "metrics.jsonl", quiet=cfg.logging.quiet)  # one JSON line per epoch
    print(f"run folder: {run_dir}")

    # 1. Data: read (built-in or manifest), train the tokenizer on the train split, preprocess.
    data = prepare_data(cfg, run_dir)
    print(f"data: {data.source}: " + ", ".join(f"{s}={len(ds)}" for s, ds in data.splits.items()))

    # 2. Teacher: the big model, supervised (saved to teacher/: model.safetensors + model.json).
    mods = cfg.teacher.modalities or cfg.data.modalities
    teacher_spec = spec_for(cfg.teacher, data, cfg, preset=cfg.teacher.preset, modalities=mods)
    train_model(teacher_spec, data, cfg, cfg.teacher.train, run_dir / "teacher", stage="teacher",
                logger=logger, seed=cfg.seed)

    # 3. Student from scratch: the small model on labels only, the number distillation must beat.
    mods = cfg.student.modalities or cfg.data.modalities
    student_spec = spec_for(cfg.student, data, cfg, preset=cfg.student.preset, modalities=mods)
    train_model(student_spec, data, cfg, cfg.student.train, run_dir / "students" / "scratch",
                stage="student-scratch", logger=logger, seed=cfg.seed)

    # 4. Distill the same architecture from the (frozen) teacher: 0.1 CE + 0.9 KD at temperature 4.
    teachers = load_teachers(["teacher"], run_dir, data, cfg)  # checked against the data
    kd = DistillStudentConfig(
        strategy="logit_kd",
        terms=[DistillTermConfig(name="kd_ce", kwargs={"temperature": 4.0, "alpha": 0.9})],
        train=cfg.student.train,
    )
    distill_student("kd", kd, data, cfg, run_dir, teachers=teachers, logger=logger, seed=cfg.seed)

    # 5. Evaluate every model in the run folder: accuracy, macro-F1, teacher agreement, size, ...
    summary = evaluate_run(run_dir, data, cfg)
    print(format_summary(summary))
    logger.close()
    return summary


if __name__ == "__main__":
    main()
