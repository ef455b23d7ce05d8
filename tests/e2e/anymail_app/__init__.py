"""A Django app written for Anymail: receivers of ``pre_send``, ``post_send`` and ``tracking``.

The end-to-end test runs a worker with ``DJANGO_SETTINGS_MODULE`` set to this
package's ``settings``; the app's ``ready`` connects the receivers there, and
the test process connects the same receivers for the producer and the
webhook view.
"""
