from helpers.tiny_models import *  # noqa: F401,F403
