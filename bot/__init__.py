"""aftercare: a Telegram assistant that clinics give their patients after aesthetic treatments."""
