#!/usr/bin/env bash
# The recipe search's remaining runs (issue 19), most valuable first. Each run is resumable: the
# fine-tuning checkpoints (var/recipes) and every finished split's scoring
# (bench/results/recipes-scored, committed) survive a stop, so rerunning this script continues
# where the last one stopped, in this session or a later one. On a GPU machine the whole list
# takes minutes; on 2 CPU cores a whole-network fold takes about 25 minutes.
#
#   MAX_MINUTES=150 bench/recipes_remaining.sh     # stop each run after 150 min (resumable)
set -u
cd "$(dirname "$0")/.."
MAX_MINUTES=${MAX_MINUTES:-600}

run() {
  echo "=== $(date -u +%H:%M:%S) $*"
  nice -n 15 .venv/bin/python bench/recipes.py --max-minutes "$MAX_MINUTES" "$@" || true
}

# The final two of the search split (ft_whole, head) under grouped 5-fold CV (the head's is done);
# the whole network's flip averaging and its blend with the head reuse the same fold trainings.
run --candidate ft_whole_tta --cv 5
run --candidate ft_whole --cv 5
run --candidate ens_whole_head --cv 5
# The rest of the search split, cheapest first; a _tta candidate runs before its plain twin, whose
# scoring it stores from the same training.
for candidate in head_folds5 head_tta ft_top4 ft_top4_v4_tta ft_top4_v4 ft_top4_v4_smooth \
  ft_top4_v4_ordinal ens_ft_head ft_lite1_top4_v4 ft_lite2_top4_v4 ft_top8_v6 ens_ft_folds5 \
  ft_whole_tta ens_whole_head; do
  run --candidate "$candidate"
done
.venv/bin/python bench/recipes.py --table
