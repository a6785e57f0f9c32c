"""tunesmith.models"""
