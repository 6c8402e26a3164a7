# The application image used by docker-compose.yml (web, worker, beat, flower).
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY . .
RUN pip install . && python -m pip check

# Static files are served by the application from the installed sources (config/asgi.py).
RUN useradd --system --uid 1000 app
USER app
EXPOSE 8000
CMD ["python", "-m", "config.serve", "--host", "0.0.0.0", "--port", "8000"]
