# The application image used by docker-compose.yml (web, worker, beat, flower).
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY . .
RUN pip install . && python -m pip check

# Hashed static files with .gz/.br variants, served by the application with DEBUG off or
# by a CDN in front of /static/ (config/static_files.py). collectstatic opens no database
# or Redis connection; the settings only insist on their URLs being set.
ENV STATIC_ROOT=/app/staticfiles
RUN DATABASE_URL=postgres://collectstatic@127.0.0.1:1/unused REDIS_URL=redis://127.0.0.1:1/0 \
    python manage.py collectstatic --noinput -v0

RUN useradd --system --uid 1000 app
USER app
EXPOSE 8000
CMD ["python", "-m", "config.serve", "--host", "0.0.0.0", "--port", "8000"]
