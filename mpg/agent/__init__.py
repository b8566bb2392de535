"""The reference phone agent (the documents' PMA): what a phone's app does, in Python.

It registers with the push server's JSON API (:mod:`mpg.agent.api_client`), keeps its
credential and its settings in a state folder (:mod:`mpg.agent.state`), and fetches,
reads and answers its messages over the sealed protocol into a local SQLite Inbox
(:mod:`mpg.agent.agent`, reusing the gateway's client and inbound path). ``mpg device``
(:mod:`mpg.cli.device`) is its command line. docs/devices.md, "The phone agent".
"""
