"""Conversion to .tflite: the front end, planning, the plan codec, file editing and inspection."""
