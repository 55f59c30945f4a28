def main() -> None:
    print("labelclean")
