"""Access to registries' trust servers: the Docker registry token protocol, docker's
credentials, the notary client's config, and one HTTPS client that ties them together.

The trust servers users sign against (IBM Cloud Container Registry, Docker Hub,
private registries) answer ``401`` until a request carries a bearer token from
the registry's auth service; this package gets those tokens the way the docker
and notary clients do, and never lets a password or token reach a message.
"""
