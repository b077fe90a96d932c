#!/usr/bin/env bash
# Reproduces the numbers in README.md (benchmarks/results/) with the shipped model:
# 2 CPU cores, 2 torch threads, nothing else running. Needs `pip install -e ".[bench]"`.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: run_all.sh DATA_DIR [RUN_DIR] (DATA_DIR holds train/ and val/bsds500)}
VAL=$DATA/val/bsds500
# The training log the curve is drawn from: the shipped model's run.
RUN=${2:-benchmarks/results/runs/extend.csv}
export OMP_NUM_THREADS=2
mkdir -p benchmarks/results
selfvae-codec evaluate "$VAL" --samples 8 --threads 2 --csv benchmarks/results/evaluate.csv \
    2>&1 | tail -2 | tee benchmarks/results/evaluate.txt
python benchmarks/benchmark.py "$VAL" --threads 2 --out benchmarks/results
python benchmarks/benchmark.py "$DATA/val/classic" --threads 2 --out benchmarks/results/classic --only lossless
python benchmarks/benchmark.py "$DATA/val/classic" --threads 2 --out benchmarks/results/classic --only rd --modes rs2,rs1
python benchmarks/near_lossless.py "$VAL" --limit 16 --threads 2 --out benchmarks/results/near_lossless
python benchmarks/near_lossless.py "$DATA/val/classic" --threads 2 --out benchmarks/results/classic/near_lossless
python benchmarks/near_lossless.py "$DATA/val/classic" --threads 2 --effort 3 --no-classical --files-only \
    --max-errors 2 4 8 --out benchmarks/results/classic/near_lossless_effort3
python benchmarks/picture_grid.py "$DATA/val/classic/waterloo-tulips.png" --crop 256 --threads 2
selfvae-codec evaluate "$DATA/val/classic" --samples 8 --threads 2 --csv benchmarks/results/evaluate_classic.csv \
    2>&1 | tail -2 | tee benchmarks/results/evaluate_classic.txt
{
    echo "#### Does the decoder use the z's?"
    echo
    echo "The lossless model, \`python benchmarks/latent_use.py $VAL --limit 10 --threads 2\`:"
    echo
    python benchmarks/latent_use.py "$VAL" --limit 10 --threads 2
    echo
    echo "The lossy model, \`python benchmarks/latent_use.py $VAL --limit 10 --threads 2 --model lossy\`:"
    echo
    python benchmarks/latent_use.py "$VAL" --limit 10 --threads 2 --model lossy
} > benchmarks/results/latent_use.md
{
    echo "#### What the conditional mode can reach, whatever the model"
    echo
    echo "\`python benchmarks/conditional_ceiling.py $VAL\`:"
    echo
    python benchmarks/conditional_ceiling.py "$VAL"
} > benchmarks/results/conditional_ceiling.md
SWEEP="python benchmarks/step_sweep.py $VAL --mode full --limit 5 --steps 0.25,0.5,1,2,4,8 --threads 2"
{
    echo "\`$SWEEP\`"
    echo "(shipped model; 2 CPU cores, 2 threads)"
    echo
    $SWEEP
} > benchmarks/results/step_sweep_full.md
python benchmarks/speed.py "$DATA/train/wikipedia/001.png" --threads 2 | tee benchmarks/results/speed.txt
python benchmarks/speed_profile.py "$DATA/train/wikipedia/001.png" --threads 2 | tee benchmarks/results/speed_profile.txt
python benchmarks/upscale.py "$VAL" --threads 2 --out benchmarks/results/upscale
python benchmarks/plot_training.py "$RUN" -o benchmarks/results/training_curve.png
python benchmarks/report.py
