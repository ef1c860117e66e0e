"""The room service: the only writer of the event graph.

Local events (client API) and received events (federation) both end here: built or
checked, authorised, persisted with their state in one transaction, then announced.
"""
