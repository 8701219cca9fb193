"""Lakehouse Monitoring's granularities that are also a fixed length of time, as pandas durations: the quality job's
windows and the monitor's are then the same windows ("1 month" and "1 year" are not a fixed length, so not offered).
The documented list: docs.databricks.com/aws/en/lakehouse-monitoring/create-monitor-api (InferenceLog granularities).
No imports: the stack's settings (infra/settings.py) read it too."""

GRANULARITIES = {"5 minutes": "5min", "30 minutes": "30min", "1 hour": "1h", "1 day": "1D", "1 week": "7D",
                 "2 weeks": "14D", "3 weeks": "21D", "4 weeks": "28D"}
