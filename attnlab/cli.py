def main():
    print("attnlab")
