"""tunesmith.tasks"""
