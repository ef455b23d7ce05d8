"""mailtrap"""
