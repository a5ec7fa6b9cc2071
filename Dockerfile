# Pose Studio on a slim Python image: CPU by default, the shipped weights inside, a non-root user.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
WORKDIR /home/user/app
COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# .dockerignore keeps .git, runs/, data/, virtual environments and caches out of this copy.
COPY --chown=user . .
USER user
# The app reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when no --host / --port is given (docker run -e ...).
ENV HF_HUB_OFFLINE=1 GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860
EXPOSE 7860
# Healthy once the app answers its config route (the image has no curl; Python asks). The first start
# builds the UI in ~10 s; the model loads lazily on the first generation, so it does not delay this.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/gradio_api/info' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=4)" || exit 1
CMD ["python", "app.py"]
