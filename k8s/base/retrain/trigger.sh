#!/usr/bin/env bash
# Start one retraining run: create a RayJob from rayjob.yaml (beside this script in the
# bastion-retrain ConfigMap) and wait until it ends, so the caller's exit status is the run's.
# The scheduled CronJob runs it; so does an on-demand trigger:
#   kubectl create job --from=cronjob/bastion-retrain bastion-retrain-now
# Needs the bastion-retrain-trigger ServiceAccount (create/get/list rayjobs.ray.io).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
job="$(kubectl create -f "$here/rayjob.yaml" -o name)"
echo "created $job"
while true; do
  deployment="$(kubectl get "$job" -o jsonpath='{.status.jobDeploymentStatus}')"
  ray_status="$(kubectl get "$job" -o jsonpath='{.status.jobStatus}')"
  case "$deployment" in
    Complete)
      # Complete means the Ray job reached a terminal state; SUCCEEDED is the only good one.
      echo "$job finished: $ray_status"
      if [[ "$ray_status" == SUCCEEDED ]]; then exit 0; fi
      exit 1
      ;;
    Failed)
      echo "$job failed: $(kubectl get "$job" -o jsonpath='{.status.message}')" >&2
      exit 1
      ;;
  esac
  sleep 30
done
