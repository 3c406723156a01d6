"""One router per resource: health, policies, models, predict, augment and the HTML page."""
