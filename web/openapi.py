from flask import Blueprint
openapi = Blueprint("openapi", __name__)
