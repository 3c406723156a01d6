"""One thin module per DVC stage: read params and inputs, call the library, write the declared
outputs, log to MLflow. ``autoaug <stage>`` (pipeline/cli.py) only parses arguments and calls
the stage function; tests call the same functions without DVC."""
