"""What the HTTP layer is given: the app's services as the lifespan yields them, and the FastAPI
dependencies that hand them to routes.

Above the runtime and the domains (it names their long-lived objects), below the routers and the
composition (``app/main.py``), which builds what it describes.
"""
